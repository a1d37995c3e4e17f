"""Switchboard cursors: shared cursors on a 100 ms tick (namespace ``/``) and a phone as the
paired remote control of a desktop page (namespace ``/remote``).

Two features in one service, because they share its process, settings, pointer rules and
replica liveness, each in a pair of modules of its own:

- ``cursors`` (the namespace and its tick) and ``board`` (where the cursors are kept);
- ``remote`` (the namespace) and ``pairing`` (where pairings are kept);
- ``validation``, what clients of either may send; ``app`` builds the service.
"""
