"""Domain errors: raised where things go wrong, turned into user messages only at the edge."""


class MoechatError(Exception):
    """Base of every error moechat reports to a user: the message says what happened and what to do."""


class EngineError(MoechatError):
    """A model could not be loaded or run."""


class CardError(MoechatError):
    """A character card or lorebook could not be read or written."""


class StoreError(MoechatError):
    """The chat database could not be read or written."""


class PromptError(MoechatError):
    """A prompt could not be built (unknown format, nothing fits the context...)."""


class ConfigError(MoechatError):
    """A frankenMoE config or a setting is invalid."""


class SamplingError(MoechatError):
    """Sampling settings that cannot work with this model (a grammar that does not parse, an unknown token...)."""
