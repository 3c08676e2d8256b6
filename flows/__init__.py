"""The pure core: question flows as data, the engine, reading and parsing of texts, triage rules."""
