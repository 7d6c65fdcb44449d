-- Work one node of the store does at a time (sending webhooks): who holds it, and until when
-- unless renewed. Another node takes it over once the lease has run out.
CREATE TABLE roles (
    name TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
