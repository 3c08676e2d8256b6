"""Voice: phone check-ins (spoken replies, the call's context, the IVR steps) and reminder calls."""
