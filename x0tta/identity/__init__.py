"""Node identity: SPIFFE IDs, X509-SVIDs and where they come from (built-in CA or SPIRE).

Pure modules: ``spiffe_id`` (parsing, authorization policy), ``types`` (SVID, bundle, revocation
list types and the X509-SVID verification rules). I/O: ``ca`` (files of the built-in CA),
``builtin`` and ``workload`` (SVID sources), ``service`` (the identity subsystem).
"""
