// Log Analytics (Container Apps logs, Application Insights storage) and Application Insights (the app's
// spans through azure-monitor-opentelemetry-exporter, docs/monitor.md). The connection string is not an
// output: the app module reads it from the resource and hands it to the container as a secret.

@description('Name of the Log Analytics workspace')
param logAnalyticsName string

@description('Name of the Application Insights component')
param appInsightsName string

@description('Region')
param location string

@description('Tags')
param tags object = {}

@description('Log Analytics ingestion cap per day in GB (-1: no cap); ingestion is what costs here')
param dailyQuotaGb int = 1

resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
    workspaceCapping: {
      dailyQuotaGb: dailyQuotaGb
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

output logAnalyticsWorkspaceId string = logs.id
output appInsightsName string = appInsights.name
