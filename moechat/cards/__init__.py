"""Character cards and what they carry: the Card schema, its JSON/PNG/CHARX containers, lorebooks and macros."""
