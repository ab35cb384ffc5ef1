"""The operator chat: a forum topic per lead, the two-way relay, quick replies and the answer SLA."""
