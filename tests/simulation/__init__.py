"""A deterministic simulation of the real ``Payouts`` under virtual time (issue 23)."""
