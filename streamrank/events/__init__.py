"""Event types, their wire codec and validation: the entry of the flow."""
