"""Managers: the logic behind each resource, between thin handlers and the models/storage."""
