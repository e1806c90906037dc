<%doc>
  WMTS 1.0.0 Capabilities (OGC 07-057r7, 7.1). Element order follows
  wmtsGetCapabilities_response.xsd. Everything from the config is escaped with |x.
  `endpoints` (services/capabilities.py) says where clients go: the server (KVP and
  REST), or a static tile store (REST only: endpoints.kvp_url is None).
</%doc><?xml version="1.0" encoding="UTF-8"?>
<Capabilities xmlns="http://www.opengis.net/wmts/1.0"
    xmlns:ows="http://www.opengis.net/ows/1.1"
    xmlns:xlink="http://www.w3.org/1999/xlink"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:gml="http://www.opengis.net/gml"
    xsi:schemaLocation="http://www.opengis.net/wmts/1.0 http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd"
    version="1.0.0">
  <ows:ServiceIdentification>
    <ows:Title>${metadata.title | x}</ows:Title>
% if metadata.abstract:
    <ows:Abstract>${metadata.abstract | x}</ows:Abstract>
% endif
% if metadata.keywords:
    <ows:Keywords>
% for keyword in metadata.keywords:
      <ows:Keyword>${keyword | x}</ows:Keyword>
% endfor
    </ows:Keywords>
% endif
    <ows:ServiceType>OGC WMTS</ows:ServiceType>
    <ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>
    <ows:Fees>${metadata.fees | x}</ows:Fees>
    <ows:AccessConstraints>${metadata.access_constraints | x}</ows:AccessConstraints>
  </ows:ServiceIdentification>
  <ows:ServiceProvider>
    <ows:ProviderName>${provider.name | x}</ows:ProviderName>
% if provider.url:
    <ows:ProviderSite xlink:href="${provider.url | x}"/>
% endif
    <ows:ServiceContact>
% if provider.contact_name:
      <ows:IndividualName>${provider.contact_name | x}</ows:IndividualName>
% endif
% if provider.contact_position:
      <ows:PositionName>${provider.contact_position | x}</ows:PositionName>
% endif
      <ows:ContactInfo>
% if provider.phone_voice or provider.phone_fax:
        <ows:Phone>
% if provider.phone_voice:
          <ows:Voice>${provider.phone_voice | x}</ows:Voice>
% endif
% if provider.phone_fax:
          <ows:Facsimile>${provider.phone_fax | x}</ows:Facsimile>
% endif
        </ows:Phone>
% endif
        <ows:Address>
% for tag, value in (("DeliveryPoint", provider.delivery_point), ("City", provider.city), ("AdministrativeArea", provider.area), ("PostalCode", provider.postal_code), ("Country", provider.country), ("ElectronicMailAddress", provider.email)):
% if value:
          <ows:${tag}>${value | x}</ows:${tag}>
% endif
% endfor
        </ows:Address>
      </ows:ContactInfo>
    </ows:ServiceContact>
  </ows:ServiceProvider>
  <ows:OperationsMetadata>
<% operations = [("GetCapabilities", endpoints.capabilities_url), ("GetTile", endpoints.tile_url)] %>\
% if endpoints.kvp_url is not None and any(layer.queryable for layer in layers):
<% operations.append(("GetFeatureInfo", endpoints.tile_url)) %>\
% endif
% for operation, rest in operations:
    <ows:Operation name="${operation}">
      <ows:DCP>
        <ows:HTTP>
% if endpoints.kvp_url is not None:
          <ows:Get xlink:href="${endpoints.kvp_url | x}">
            <ows:Constraint name="GetEncoding">
              <ows:AllowedValues>
                <ows:Value>KVP</ows:Value>
              </ows:AllowedValues>
            </ows:Constraint>
          </ows:Get>
% endif
          <ows:Get xlink:href="${rest | x}">
            <ows:Constraint name="GetEncoding">
              <ows:AllowedValues>
                <ows:Value>RESTful</ows:Value>
              </ows:AllowedValues>
            </ows:Constraint>
          </ows:Get>
        </ows:HTTP>
      </ows:DCP>
    </ows:Operation>
% endfor
  </ows:OperationsMetadata>
  <Contents>
% for layer in layers:
    <Layer>
      <ows:Title>${layer.title | x}</ows:Title>
% if layer.abstract:
      <ows:Abstract>${layer.abstract | x}</ows:Abstract>
% endif
<% wgs84 = wgs84_bbox(layer) %>\
      <ows:WGS84BoundingBox>
        <ows:LowerCorner>${num(wgs84.minx)} ${num(wgs84.miny)}</ows:LowerCorner>
        <ows:UpperCorner>${num(wgs84.maxx)} ${num(wgs84.maxy)}</ows:UpperCorner>
      </ows:WGS84BoundingBox>
      <ows:Identifier>${layer.name | x}</ows:Identifier>
% for on_crs in bounding_boxes(layer):
      <ows:BoundingBox crs="${on_crs.grid.crs_urn | x}">
        <ows:LowerCorner>${corner(on_crs.grid, on_crs.bbox.minx, on_crs.bbox.miny)}</ows:LowerCorner>
        <ows:UpperCorner>${corner(on_crs.grid, on_crs.bbox.maxx, on_crs.bbox.maxy)}</ows:UpperCorner>
      </ows:BoundingBox>
% endfor
      <Style isDefault="true">
        <ows:Identifier>${layer.wmts_style | x}</ows:Identifier>
      </Style>
      <Format>${layer.mime_type | x}</Format>
<% feature_info = layer.queryable and endpoints.kvp_url is not None %>\
% if feature_info:
% for info_format in layer.wms.info_formats:
      <InfoFormat>${info_format | x}</InfoFormat>
% endfor
% endif
% for dimension in layer.dimensions:
      <Dimension>
        <ows:Identifier>${dimension.name | x}</ows:Identifier>
        <Default>${dimension.default | x}</Default>
% for value in dimension.values:
        <Value>${value | x}</Value>
% endfor
      </Dimension>
% endfor
% for variant in layer.variants():
      <TileMatrixSetLink>
        <TileMatrixSet>${variant.grid.name | x}</TileMatrixSet>
<% limits_by_matrix = matrix_limits(variant) %>\
% if limits_by_matrix:
        <TileMatrixSetLimits>
% for matrix_id, limits in limits_by_matrix:
          <TileMatrixLimits>
            <TileMatrix>${matrix_id | x}</TileMatrix>
            <MinTileRow>${limits.min_row}</MinTileRow>
            <MaxTileRow>${limits.max_row}</MaxTileRow>
            <MinTileCol>${limits.min_col}</MinTileCol>
            <MaxTileCol>${limits.max_col}</MaxTileCol>
          </TileMatrixLimits>
% endfor
        </TileMatrixSetLimits>
% endif
      </TileMatrixSetLink>
% endfor
% for resource_base in endpoints.resource_bases:
      <ResourceURL format="${layer.mime_type | x}" resourceType="tile" template="${resource_base | x}/${layer.name | x}/{Style}/${"".join("{%s}/" % d.name for d in layer.dimensions) | x}{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.${layer.extension | x}"/>
% if feature_info:
% for info_format in layer.wms.info_formats:
      <ResourceURL format="${info_format | x}" resourceType="FeatureInfo" template="${resource_base | x}/${layer.name | x}/{Style}/${"".join("{%s}/" % d.name for d in layer.dimensions) | x}{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}/{J}/{I}.${info_extension(info_format) | x}"/>
% endfor
% endif
% endfor
    </Layer>
% endfor
% for grid in grids:
    <TileMatrixSet>
      <ows:Identifier>${grid.name | x}</ows:Identifier>
      <ows:BoundingBox crs="${grid.crs_urn | x}">
        <ows:LowerCorner>${corner(grid, grid.bbox.minx, grid.bbox.miny)}</ows:LowerCorner>
        <ows:UpperCorner>${corner(grid, grid.bbox.maxx, grid.bbox.maxy)}</ows:UpperCorner>
      </ows:BoundingBox>
      <ows:SupportedCRS>${grid.crs_urn | x}</ows:SupportedCRS>
% for z in range(len(grid.resolutions)):
<% width, height = grid.matrix_size(z) %>\
      <TileMatrix>
        <ows:Identifier>${grid.matrix_id(z) | x}</ows:Identifier>
        <ScaleDenominator>${num(grid.scale_denominator(z))}</ScaleDenominator>
        <TopLeftCorner>${" ".join(num(v) for v in grid.top_left_corner())}</TopLeftCorner>
        <TileWidth>${grid.tile_size}</TileWidth>
        <TileHeight>${grid.tile_size}</TileHeight>
        <MatrixWidth>${width}</MatrixWidth>
        <MatrixHeight>${height}</MatrixHeight>
      </TileMatrix>
% endfor
    </TileMatrixSet>
% endfor
  </Contents>
  <ServiceMetadataURL xlink:href="${endpoints.capabilities_url | x}"/>
</Capabilities>
