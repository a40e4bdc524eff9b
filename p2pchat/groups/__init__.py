"""Group chats among friends: membership, keys and messages (issue 12; PROTOCOL.md §15)."""
