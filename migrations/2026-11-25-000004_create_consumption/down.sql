DROP TABLE processed_events; DROP TABLE consumer_offsets;
