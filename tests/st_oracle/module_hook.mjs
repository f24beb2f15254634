// Loader hook for oracle.mjs: SillyTavern's public/*.js are ES modules without a package.json saying so.
let pub = '';
export async function initialize(data) {
    pub = data.pub;
}
export async function load(url, context, next) {
    if (url.startsWith(pub) && url.endsWith('.js')) {
        const result = await next(url, { ...context, format: 'module' });
        return { ...result, format: 'module' };
    }
    return next(url, context);
}
