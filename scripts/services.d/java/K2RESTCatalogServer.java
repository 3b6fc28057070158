// The Apache Iceberg REST catalog server of iceberg-open-api (the code behind the
// apache/iceberg-rest-fixture image), started as that image starts it — the catalog built
// from CATALOG_* variables, served by RESTCatalogServlet — but listening on one address
// (CATALOG_REST_HOST, default 127.0.0.1) instead of every interface, which the fixture's own
// main cannot be told. In the fixture's package to reach its package-private adapter.
package org.apache.iceberg.rest;

import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.iceberg.CatalogUtil;
import org.apache.iceberg.catalog.Catalog;
import org.apache.iceberg.jdbc.JdbcCatalog;
import org.apache.iceberg.relocated.com.google.common.collect.Maps;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.server.handler.gzip.GzipHandler;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

public final class K2RESTCatalogServer {
  public static void main(String[] args) throws Exception {
    Map<String, String> config = Maps.newHashMap(RCKUtils.environmentCatalogConfig());
    config.putIfAbsent("catalog-impl", JdbcCatalog.class.getName());
    config.putIfAbsent("jdbc.schema-version", "V1");
    if (!config.containsKey("uri") || !config.containsKey("warehouse")) {
      throw new IllegalArgumentException("CATALOG_URI and CATALOG_WAREHOUSE are required");
    }
    String name = config.getOrDefault("catalog.name", "rest_backend");
    Catalog catalog = CatalogUtil.buildIcebergCatalog(name, config, new Configuration());
    RESTCatalogServer.CatalogContext context = new RESTCatalogServer.CatalogContext(catalog, config);

    ServletContextHandler handler = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    handler.addServlet(
        new ServletHolder(new RESTCatalogServlet(new RESTServerCatalogAdapter(context))), "/*");
    handler.insertHandler(new GzipHandler());

    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost(config.getOrDefault("rest.host", "127.0.0.1"));
    connector.setPort(Integer.parseInt(config.getOrDefault("rest.port", "8181")));
    server.addConnector(connector);
    server.setHandler(handler);
    server.start();
    server.join();
  }
}
