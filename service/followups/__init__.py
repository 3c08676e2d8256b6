"""Follow-ups: the 4-6-week schedule (claims with a lease) and on-call texts for open alerts."""
