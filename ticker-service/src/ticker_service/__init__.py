"""Switchboard ticker: Bitstamp's live trades fanned out to browsers."""
