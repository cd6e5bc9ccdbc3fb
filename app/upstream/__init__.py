"""The upstream: Dopamint's nano-banana edit, its request schema and its x402-paying client."""
