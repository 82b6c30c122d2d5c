"""The token endpoint benchmark (`make bench`): the portal beside its peers, with wrk."""
