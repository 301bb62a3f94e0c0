-- Schema of the Switchyard reference orders app. The same schema serves every
-- tier: in the shared pool many tenants' rows live side by side, in a
-- dedicated database or cluster there is only one tenant, but every row still
-- carries tenant_id and every statement still filters on it, so moving a
-- tenant between tiers is a plain copy of its rows.
--
-- Idempotent: EnsureSchema runs it on the first use of every database.

CREATE TABLE IF NOT EXISTS orders (
    tenant_id   text        NOT NULL,
    id          bigserial,
    item        text        NOT NULL,
    quantity    int         NOT NULL,
    price_cents bigint      NOT NULL,
    attrs       jsonb       NOT NULL DEFAULT '{}',
    version     int         NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS order_events (
    tenant_id text        NOT NULL,
    order_id  bigint      NOT NULL,
    seq       int         NOT NULL,
    kind      text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, order_id, seq),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id) ON DELETE CASCADE
);
