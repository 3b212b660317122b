DROP TABLE an_event_counts; DROP TABLE an_users; DROP TABLE an_products;
