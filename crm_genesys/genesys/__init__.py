"""genesys package."""
