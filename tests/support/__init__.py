"""Test helpers: real-peer launchers, fakes (named as such), footage, the receiver harness, waiting."""
