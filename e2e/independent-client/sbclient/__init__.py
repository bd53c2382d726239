"""An independent Switchboard signaling client, written from docs/protocol.md and schemas/ alone."""
