"""Access control: API keys, users, JWT access tokens, scopes and rate limits."""
