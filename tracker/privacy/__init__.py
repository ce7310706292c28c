"""Privacy toolkit: data-subject rights, exclusion list, retention, audit and records of processing.

Merchants are data controllers and Calltrack their processor: these services let an admin or a
DPO answer a data-subject request (find, export, rectify, erase, restrict, object), enforce
retention, and document the processing. Services take explicit arguments (a database session,
a clock, the secret key) so tests drive them without HTTP; `dashboard.privacy_http` and
`dashboard.privacy_cli` are thin layers over them.
"""
