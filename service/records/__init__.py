"""Records: alerts, patients' histories and exports, and the audit log of every staff read."""
