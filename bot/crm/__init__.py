"""amoCRM sync: a durable outbox of CRM operations, drained in batches under amoCRM's rate limit (see README.md)."""
