"""Fixed values of the machine credential format."""

# Client secrets start with this so secret scanners can spot a leak.
SECRET_PREFIX = "mip_cs_"
