"""The supervised student stage: small real-time networks distilled from (photo, stylized) pairs."""
