"""Customer matching: suggest existing QBO customers for the tenant's patients, accept / override a link,
or let the engine create a new customer; bulk-accept unambiguous matches above the tenant's threshold.

A link is stored where the sync engine looks first: the patient object's ``qbo["customer"]``. Customers
are read with one paged query (``select * from Customer``); customers qbsync created (their Notes carry
its marker) and customers already linked to another patient are not offered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.adapters.attention import AttentionStore
from shared.adapters.audit import AuditLog
from shared.adapters.dynamo import ObjectItem
from shared.adapters.qbo.faults import QboFault
from shared.adapters.qbo.types import QboApi
from shared.domain import matching as m
from shared.domain.errors import BadRequest, Conflict, NotFound
from shared.domain.tenant import Tenant
from shared.observability import count
from shared.services.qbo_factory import connected_client
from shared.services.tenants import get_tenant

ClientFactory = Callable[[str], QboApi]
MAX_PAGES = 50  # 50 x 1000 customers


def _default_factory(realm_id: str) -> QboApi:
    from shared.services.qbo_factory import default_client_factory

    return default_client_factory(realm_id)


def _linked(item: ObjectItem) -> str | None:
    cust = (item.qbo or {}).get("customer")
    return str(cust["id"]) if isinstance(cust, dict) and cust.get("id") else None


def _person(item: ObjectItem) -> m.Person:
    d = item.desired or {}
    pid = str(d.get("patient_id") or item.object_key.split(":", 1)[1])
    return m.Person(pid, d.get("first_name"), d.get("last_name"), d.get("email"))


class MatchingService:
    def __init__(
        self,
        client_factory: ClientFactory | None = None,
        store: AttentionStore | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.client_factory = client_factory or _default_factory
        self.store = store or AttentionStore()
        self.audit = audit or AuditLog()

    def _client(self, tenant: Tenant) -> QboApi:
        return connected_client(tenant, self.client_factory)

    def _customers(self, client: QboApi, exclude_ids: set[str]) -> list[m.Customer]:
        rows = client.query("select * from Customer", max_pages=MAX_PAGES)
        out = []
        for row in rows:
            if row.get("Active") is False or str(row.get("Id")) in exclude_ids:
                continue
            if str(row.get("Notes") or "").startswith("qbsync:"):
                continue  # created by qbsync for some patient: not a pre-existing customer
            out.append(m.Customer.from_qbo(row))
        return out

    def _compute(
        self, tenant_id: str, min_score: float
    ) -> tuple[Tenant, dict[str, ObjectItem], list[m.Suggestion], int]:
        tenant = get_tenant(tenant_id)
        patients = list(self.store.of_tenant(tenant_id, ["patient"]))
        linked = {cid for cid in (_linked(p) for p in patients) if cid}
        open_ = {_person(p).key: p for p in patients if not _linked(p) and (p.desired or {})}
        customers = self._customers(self._client(tenant), linked)
        suggestions = m.suggest((_person(p) for p in open_.values()), customers, min_score=min_score)
        return tenant, open_, suggestions, len(customers)

    def suggestions(self, tenant_id: str, *, min_score: float = m.DEFAULT_MIN_SCORE, limit: int = 500) -> Any:
        tenant, open_, suggestions, n_customers = self._compute(tenant_id, min_score)
        threshold = tenant.settings.matching.auto_accept_threshold
        items = []
        for s in suggestions[:limit]:
            p = _person(open_[s.patient_id])
            items.append(
                {
                    **s.to_dict(),
                    # The admin matching patients needs to see who they are; this view is never logged.
                    "patient": {"first_name": p.first_name, "last_name": p.last_name, "email": p.email},
                    "auto_acceptable": m.auto_acceptable(s, threshold),
                }
            )
        return {
            "tenant_id": tenant_id,
            "threshold": threshold,
            "unlinked_patients": len(open_),
            "customers_considered": n_customers,
            "items": items,
        }

    def _link(self, actor: str, tenant_id: str, patient_id: str, row: dict[str, Any], how: str, score: Any) -> Any:
        item = self.store.get(tenant_id, f"patient:{patient_id}")
        if _linked(item):
            raise Conflict(f"patient {patient_id} is already linked to customer {_linked(item)}", field="patient_id")
        link = {
            "type": "Customer",
            "id": str(row["Id"]),
            "sync_token": str(row.get("SyncToken", "0")),
            "display_name": row.get("DisplayName"),
            "state": "active",
            "linked_by": actor,
            "linked_how": how,
            "score": score,
            "linked_at": datetime.now(UTC).isoformat(),
        }
        link = {k: v for k, v in link.items() if v is not None}
        self.store.link_customer(item, link, reason=f"customer {how} by {actor}", touch=True)
        self.audit.record(
            tenant_id,
            actor,
            f"customer_{how}",
            item.object_key,
            {"customer_id": link["id"], "display_name": link.get("display_name"), "score": score},
        )
        count("CustomerLinked", how=how)
        return {"patient_id": patient_id, "customer": link}

    def accept(self, actor: str, tenant_id: str, patient_id: str, customer_id: str | None = None) -> Any:
        """Link the patient to its best suggestion (or to ``customer_id`` among its suggestions).

        Raises NotFound (no suggestion), BadRequest (customer not among the suggestions), Conflict."""
        _, _, suggestions, _ = self._compute(tenant_id, m.DEFAULT_MIN_SCORE)
        s = next((x for x in suggestions if x.patient_id == patient_id), None)
        if s is None or s.best is None:
            raise NotFound(f"no suggestion for patient {patient_id}", field="patient_id")
        chosen = (
            s.best if customer_id is None else next((c for c in s.candidates if c.customer_id == customer_id), None)
        )
        if chosen is None:
            raise BadRequest(
                f"customer {customer_id} is not a suggestion for {patient_id}; use link", field="customer_id"
            )
        row = {"Id": chosen.customer_id, "DisplayName": chosen.display_name}
        return self._link(actor, tenant_id, patient_id, row, "accepted", chosen.score)

    def link(self, actor: str, tenant_id: str, patient_id: str, customer_id: str) -> Any:
        """Override: link to any active QBO customer. Raises NotFound (no such customer), Conflict."""
        tenant = get_tenant(tenant_id)
        try:
            row = self._client(tenant).read("Customer", customer_id)
        except QboFault as exc:
            raise NotFound(f"QuickBooks customer {customer_id} not found: {exc.message}", field="customer_id") from exc
        if row.get("Active") is False:
            raise BadRequest(f"QuickBooks customer {customer_id} is inactive", field="customer_id")
        return self._link(actor, tenant_id, patient_id, row, "linked", None)

    def create(self, actor: str, tenant_id: str, patient_id: str) -> Any:
        """No existing customer fits: the engine creates one (normal exactly-once path)."""
        item = self.store.get(tenant_id, f"patient:{patient_id}")
        if _linked(item):
            raise Conflict(f"patient {patient_id} is already linked to customer {_linked(item)}", field="patient_id")
        self.store.touch(item, reason=f"create customer requested by {actor}")
        self.audit.record(tenant_id, actor, "customer_create", item.object_key, {})
        return {"patient_id": patient_id, "action": "create_queued"}

    def auto_accept(self, actor: str, tenant_id: str, *, threshold: float | None = None, dry_run: bool = False) -> Any:
        """Accept every suggestion at or above the threshold that is not ambiguous, and whose customer is not
        the best match of another patient too (that would be two patients on one customer)."""
        tenant, _, suggestions, _ = self._compute(tenant_id, m.DEFAULT_MIN_SCORE)
        limit = tenant.settings.matching.auto_accept_threshold if threshold is None else threshold
        if not 0 <= limit <= 1:
            raise BadRequest("threshold must be between 0 and 1", field="threshold")
        best_of = Counter(s.best.customer_id for s in suggestions if s.best and s.best.score >= limit)
        accepted: list[dict[str, Any]] = []
        ambiguous: list[str] = []
        below: list[str] = []
        errors: dict[str, str] = {}
        for s in suggestions:
            assert s.best is not None
            if s.best.score < limit:
                below.append(s.patient_id)
            elif s.ambiguous or best_of[s.best.customer_id] > 1:
                ambiguous.append(s.patient_id)
            elif dry_run:
                accepted.append({"patient_id": s.patient_id, "customer_id": s.best.customer_id, "score": s.best.score})
            else:
                row = {"Id": s.best.customer_id, "DisplayName": s.best.display_name}
                try:
                    self._link(actor, tenant_id, s.patient_id, row, "accepted", s.best.score)
                except (Conflict, NotFound) as exc:
                    errors[s.patient_id] = exc.message
                    continue
                accepted.append({"patient_id": s.patient_id, "customer_id": s.best.customer_id, "score": s.best.score})
        return {
            "threshold": limit,
            "dry_run": dry_run,
            "accepted": accepted,
            "ambiguous": ambiguous,
            "below_threshold": below,
            "errors": errors,
        }
