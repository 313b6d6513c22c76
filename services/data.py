"""Seed data for the mock backends: small, realistic and deterministic.

Every call returns fresh copies, so one app's writes never leak into another's.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]

_USERS: list[Record] = [
    {
        "id": 1,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "tier": "enterprise",
        "created_at": "2023-01-09T08:15:00Z",
    },
    {
        "id": 2,
        "name": "Grace Hopper",
        "email": "grace@example.com",
        "tier": "pro",
        "created_at": "2023-02-14T10:02:00Z",
    },
    {
        "id": 3,
        "name": "Alan Turing",
        "email": "alan@example.com",
        "tier": "free",
        "created_at": "2023-03-21T16:45:00Z",
    },
    {
        "id": 4,
        "name": "Katherine Johnson",
        "email": "katherine@example.com",
        "tier": "pro",
        "created_at": "2023-04-02T09:30:00Z",
    },
    {
        "id": 5,
        "name": "Edsger Dijkstra",
        "email": "edsger@example.com",
        "tier": "free",
        "created_at": "2023-05-17T13:20:00Z",
    },
    {
        "id": 6,
        "name": "Barbara Liskov",
        "email": "barbara@example.com",
        "tier": "enterprise",
        "created_at": "2023-06-30T11:11:00Z",
    },
    {
        "id": 7,
        "name": "Donald Knuth",
        "email": "don@example.com",
        "tier": "free",
        "created_at": "2023-08-08T07:50:00Z",
    },
    {
        "id": 8,
        "name": "Margaret Hamilton",
        "email": "margaret@example.com",
        "tier": "pro",
        "created_at": "2023-09-12T15:05:00Z",
    },
    {
        "id": 9,
        "name": "Linus Torvalds",
        "email": "linus@example.com",
        "tier": "free",
        "created_at": "2023-10-25T18:40:00Z",
    },
    {
        "id": 10,
        "name": "Frances Allen",
        "email": "frances@example.com",
        "tier": "enterprise",
        "created_at": "2023-12-01T12:00:00Z",
    },
]

_PRODUCTS: list[Record] = [
    {
        "id": 1,
        "name": "Mechanical Keyboard",
        "description": "Tenkeyless, hot-swappable brown switches",
        "price": 89.99,
        "category": "peripherals",
        "stock": 42,
    },
    {
        "id": 2,
        "name": "Wireless Mouse",
        "description": "Ergonomic, 3 devices, USB-C charging",
        "price": 39.5,
        "category": "peripherals",
        "stock": 120,
    },
    {
        "id": 3,
        "name": '27" 4K Monitor',
        "description": "IPS panel, 60 Hz, USB-C 65 W",
        "price": 329.0,
        "category": "displays",
        "stock": 15,
    },
    {
        "id": 4,
        "name": "USB-C Hub",
        "description": "7-in-1: HDMI, 3x USB-A, SD, PD",
        "price": 34.99,
        "category": "accessories",
        "stock": 200,
    },
    {
        "id": 5,
        "name": "Laptop Stand",
        "description": "Aluminium, adjustable height",
        "price": 29.9,
        "category": "accessories",
        "stock": 75,
    },
    {
        "id": 6,
        "name": "Noise-Cancelling Headphones",
        "description": "Over-ear, 30 h battery",
        "price": 249.0,
        "category": "audio",
        "stock": 33,
    },
    {
        "id": 7,
        "name": "Webcam 1080p",
        "description": "Autofocus, dual microphones",
        "price": 59.0,
        "category": "video",
        "stock": 64,
    },
    {
        "id": 8,
        "name": "Desk Microphone",
        "description": "Cardioid condenser, USB",
        "price": 99.0,
        "category": "audio",
        "stock": 28,
    },
    {
        "id": 9,
        "name": "Portable SSD 1 TB",
        "description": "USB 3.2 Gen 2, 1050 MB/s",
        "price": 109.99,
        "category": "storage",
        "stock": 90,
    },
    {
        "id": 10,
        "name": "microSD 256 GB",
        "description": "A2, V30",
        "price": 24.99,
        "category": "storage",
        "stock": 310,
    },
    {
        "id": 11,
        "name": "Ethernet Cable 5 m",
        "description": "Cat 6, snagless",
        "price": 9.99,
        "category": "networking",
        "stock": 500,
    },
    {
        "id": 12,
        "name": "Wi-Fi 6 Router",
        "description": "Dual band, 4 antennas",
        "price": 129.0,
        "category": "networking",
        "stock": 22,
    },
    {
        "id": 13,
        "name": "Desk Lamp",
        "description": "LED, adjustable colour temperature",
        "price": 45.0,
        "category": "office",
        "stock": 58,
    },
    {
        "id": 14,
        "name": "Office Chair",
        "description": "Mesh back, lumbar support",
        "price": 279.0,
        "category": "office",
        "stock": 9,
    },
    {
        "id": 15,
        "name": "Standing Desk",
        "description": "Electric, 120x60 cm",
        "price": 459.0,
        "category": "office",
        "stock": 6,
    },
    {
        "id": 16,
        "name": "Cable Organizer",
        "description": "Silicone clips, pack of 10",
        "price": 7.5,
        "category": "accessories",
        "stock": 400,
    },
    {
        "id": 17,
        "name": "Bluetooth Speaker",
        "description": "Waterproof, 12 h battery",
        "price": 69.0,
        "category": "audio",
        "stock": 47,
    },
    {
        "id": 18,
        "name": "Graphics Tablet",
        "description": "10x6 in, 8192 pressure levels",
        "price": 79.0,
        "category": "peripherals",
        "stock": 19,
    },
    {
        "id": 19,
        "name": "Power Bank 20000 mAh",
        "description": "PD 45 W",
        "price": 49.99,
        "category": "accessories",
        "stock": 130,
    },
    {
        "id": 20,
        "name": "Smart Plug",
        "description": "Energy monitoring, Matter",
        "price": 14.99,
        "category": "smart-home",
        "stock": 260,
    },
]

_ORDERS: list[Record] = [
    {
        "id": 1,
        "user_id": "1",
        "product_id": 3,
        "quantity": 1,
        "status": "delivered",
        "total": 329.0,
        "created_at": "2024-01-05T10:00:00Z",
    },
    {
        "id": 2,
        "user_id": "2",
        "product_id": 1,
        "quantity": 2,
        "status": "shipped",
        "total": 179.98,
        "created_at": "2024-01-18T14:30:00Z",
    },
    {
        "id": 3,
        "user_id": "4",
        "product_id": 11,
        "quantity": 5,
        "status": "paid",
        "total": 49.95,
        "created_at": "2024-02-02T09:12:00Z",
    },
    {
        "id": 4,
        "user_id": "6",
        "product_id": 15,
        "quantity": 1,
        "status": "pending",
        "total": 459.0,
        "created_at": "2024-02-20T17:45:00Z",
    },
    {
        "id": 5,
        "user_id": "3",
        "product_id": 6,
        "quantity": 1,
        "status": "cancelled",
        "total": 249.0,
        "created_at": "2024-03-01T08:05:00Z",
    },
]

_SEEDS: dict[str, list[Record]] = {"users": _USERS, "products": _PRODUCTS, "orders": _ORDERS}


def seed(name: str) -> list[Record]:
    """Fresh copies of the seed records of service `name`."""
    return [dict(record) for record in _SEEDS[name]]


def product_prices() -> dict[int, float]:
    """Product id -> unit price; the orders service prices orders with it."""
    return {product["id"]: product["price"] for product in _PRODUCTS}
