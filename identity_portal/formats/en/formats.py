"""How the console writes dates and times: UTC with seconds, as the audit log does.

Django's English default ("Dec. 1, 2026, 7:12 a.m.") drops the seconds and the
zone; a machine's "created" or a key's "activated" must read like the audit
events it is compared with. Only display formats: what forms accept is Django's.
"""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
