"""What every test shares: the one fake Twilio (tests.support.twilio), a patient's phone that
signs its webhook requests (tests.support.phones) and the answers that give each level
(tests.support.answers)."""
