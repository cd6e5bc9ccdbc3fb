"""The x402 server side: prices, requirements, payment decoding, facilitator access, refunds."""
