"""Node identity: SPIFFE IDs, X509-SVIDs and where they come from (built-in CA or SPIRE).

Pure (data and ``now`` in, data out): ``spiffe_id`` (parsing, authorization policy), ``types``
(SVID, bundle and revocation-list types, the X509-SVID verification rules), ``certs`` (building
certificates, requests and CRLs). I/O: ``ca`` (the built-in CA's directory), ``source`` (what
sources share), ``builtin`` and ``workload`` (the two SVID sources), ``service`` (the identity
subsystem), ``workload_server`` (a Workload API server for tests and the lab). See docs/identity.md.
"""
