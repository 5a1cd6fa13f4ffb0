"""The identity subsystem's health conditions, declared as data (see :mod:`x0tta.common.health`).

Each code has its entry in docs/troubleshooting.md, under its anchor.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec, Severity

SVID_MISSING = ConditionSpec(
    "svid_missing", Severity.DEGRADED, "no SVID yet: files absent or unusable, or SPIRE has sent none"
)
SPIRE_SOCKET_MISSING = ConditionSpec(
    "spire_socket_missing", Severity.DEGRADED, "source workload_api and no SPIRE Workload API socket at the path"
)
SVID_EXPIRING = ConditionSpec(
    "svid_expiring", Severity.DEGRADED, "less than expiring_fraction of the SVID's lifetime left: renewal is late"
)
SVID_EXPIRED = ConditionSpec("svid_expired", Severity.FAILING, "the SVID is past notAfter: peers refuse this node")
SVID_INVALID = ConditionSpec("svid_invalid", Severity.DEGRADED, "the SVID does not verify against our own bundle")
SVID_WRONG_TRUST_DOMAIN = ConditionSpec(
    "svid_wrong_trust_domain", Severity.DEGRADED, "the SVID is of another trust domain than [identity] trust_domain"
)
SVID_OTHER_NODE = ConditionSpec(
    "svid_other_node", Severity.DEGRADED, "the SVID names another ID than this node's"
)
SVID_RENEWAL_FAILING = ConditionSpec(
    "svid_renewal_failing", Severity.DEGRADED, "self-renewal from [identity] ca_dir failed (retried)"
)
RENEWAL_CA_UNREACHABLE = ConditionSpec(
    "renewal_ca_unreachable", Severity.DEGRADED,
    "renewal through the mesh is due and no CA node answered (none connected, or its answer was unusable)",
)
RENEWAL_REFUSED = ConditionSpec(
    "renewal_refused", Severity.DEGRADED, "the CA node refused this node's renewal (revoked, or a wrong ID)"
)
WORKLOAD_API_FAILING = ConditionSpec(
    "workload_api_failing", Severity.DEGRADED, "the SPIRE Workload API stream failed for good; the last SVID stays"
)
REVOCATION_LIST_INVALID = ConditionSpec(
    "revocation_list_invalid", Severity.DEGRADED, "the revocation list did not verify; the previous one stays"
)
REVOCATION_LIST_STALE = ConditionSpec(
    "revocation_list_stale", Severity.DEGRADED, "the revocation list is past its nextUpdate (still enforced)"
)

CONDITIONS = (
    SVID_MISSING, SPIRE_SOCKET_MISSING, SVID_EXPIRING, SVID_EXPIRED, SVID_INVALID, SVID_WRONG_TRUST_DOMAIN,
    SVID_OTHER_NODE, SVID_RENEWAL_FAILING, RENEWAL_CA_UNREACHABLE, RENEWAL_REFUSED, WORKLOAD_API_FAILING,
    REVOCATION_LIST_INVALID, REVOCATION_LIST_STALE,
)
