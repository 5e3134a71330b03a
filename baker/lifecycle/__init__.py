"""An image's life after its build: which old images are kept and which may go (retention;
revocation statements are evidence: baker.evidence.revocation)."""
