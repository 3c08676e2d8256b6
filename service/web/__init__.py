"""The web: Twilio webhooks, the staff dashboard, the JSON API, the simulator and /healthz."""
