"""End-to-end sessions between friends: Olm double ratchets (vodozemac) bound to the libp2p
identity, sans-IO (issue 13; PROTOCOL.md §13).

``bundle`` signs and checks the public keys a friend needs to start a session with us;
``pair`` holds one friend's session: seal and open message bodies, pickled for the database.
``p2pchat.chat.sealing`` keeps their state in the database and seals msg/2.0.0 messages.
"""
