"""The benchmark harness: each module registers one `calltrack bench NAME`."""
