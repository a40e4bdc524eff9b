"""End-to-end sessions: Olm double ratchets between friends and Megolm sender keys for
groups (vodozemac), bound to the libp2p identity, sans-IO (issues 13 and 12; PROTOCOL.md §13,
§15.2).

``bundle`` signs and checks the public keys a friend needs to start a session with us;
``pair`` holds one friend's session: seal and open message bodies, pickled for the database.
``p2pchat.chat.sealing`` keeps their state in the database and seals msg/2.0.0 messages.
``megolm`` holds group sender keys: ours (seal, share) and the members' (open).
"""
