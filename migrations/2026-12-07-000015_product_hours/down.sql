DROP TABLE an_product_hours;
