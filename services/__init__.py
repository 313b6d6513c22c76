"""Mock backends (users, products, orders) behind the gateway, with fault injection for tests."""
