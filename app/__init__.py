"""x402-reseller: resell an x402-paid upstream API at the operator's price."""
