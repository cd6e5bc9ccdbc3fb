"""Local sandbox: a Base-like anvil chain with USDC for end-to-end x402 payments."""
