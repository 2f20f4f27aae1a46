"""The deadlines service: reminders, overdue and closing notices for queries, from `bus.queries`."""
