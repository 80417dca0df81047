"""Generated protobuf modules (make proto). Do not edit."""
