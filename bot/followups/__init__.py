"""Follow-ups after the test batch: stage messages to the buyer (``STAGE_MESSAGES``), held in quiet hours, sent once."""
