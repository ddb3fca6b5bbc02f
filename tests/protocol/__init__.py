"""The abstract payout protocol (``docs/protocol.md``), model-checked exhaustively."""
