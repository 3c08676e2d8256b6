"""A fake Twilio REST API served over real HTTP, for tests that run the product as processes."""

from tests.fake_twilio.server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilioClient,
    FakeTwilioServer,
)

__all__ = ["ACCOUNT_SID", "AUTH_TOKEN", "FakeTwilioClient", "FakeTwilioServer"]
