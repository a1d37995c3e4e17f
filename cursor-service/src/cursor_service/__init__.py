"""Switchboard cursors: shared cursors on a 100 ms tick (namespace ``/``) and a phone as the
paired remote control of a desktop page (namespace ``/remote``)."""
