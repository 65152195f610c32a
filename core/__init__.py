"""Pure domain: config models, symbols, domain types, kernels. No I/O, no Ray, no clock reads."""
