"""Accounts: clinics and their numbers, staff sign-in, API tokens, the demo clinic."""
