"""Authentication and abuse protection, one concern per module: tokens (access tokens),
passwords (hashing), body_limit (request size) and lockout (password guessing)."""
