"""meterbill: self-hosted billing for SaaS products."""
